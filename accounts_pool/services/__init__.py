"""Every write lives here: refresh, quota checks, dispatch, history, the manual levers."""
