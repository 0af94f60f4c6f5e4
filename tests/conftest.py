"""Puts tests/ on sys.path so every test directory can import the shared helpers in it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
