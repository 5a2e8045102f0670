from pathlib import Path

#: The checkout under test (the tests run from one, never from an installed package).
REPO_ROOT = Path(__file__).resolve().parent.parent
