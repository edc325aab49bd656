"""What the tests share: factories, fakes, the process helper, the client-side JOSE oracle, and real servers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: gunicorn.conf.py, service/, deploy/
