"""The demo: bloat.py (an app that grows and handles the signals) and driver.py (oomhero demo)."""
