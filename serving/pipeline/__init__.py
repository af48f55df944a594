"""A request's life, from an authenticated call to a recorded answer: `dispatch.py` reads top to bottom; each
other module here is one step of it."""
