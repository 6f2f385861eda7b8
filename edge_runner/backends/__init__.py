"""Runtime adapters behind one contract (see ``base.py``) and their registry."""
