"""What every layer above ``symbolic`` shares and nothing of the project is needed for: the error a bad parameter
raises (``common.errors``) and writing files so that a reader sees the old content or the new, never a part
(``common.io``). This package imports only the standard library (``tests/test_layering.py``)."""
