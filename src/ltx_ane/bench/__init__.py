"""``ltx-ane bench``: every component on every backend of this machine, with parity, placement and a roofline.

``profile.py`` (the saved per-machine backend choice) is the part other code reads; it imports nothing heavy.
"""
