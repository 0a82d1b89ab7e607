"""Gunicorn entry point for Keystone (used by scripts/keystone.sh).

keystone.wsgi.api builds its oslo.config from sys.argv at import time; under
gunicorn that is gunicorn's own command line, which oslo.config rejects and every
worker exits with status 2. Keep only the program name before importing it; the
configuration file comes from OS_KEYSTONE_CONFIG_FILES instead.
"""
import sys

del sys.argv[1:]

from keystone.wsgi.api import application  # noqa: E402,F401
