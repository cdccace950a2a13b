"""Helpers shared by several test modules. A test module imports from here (or ``conftest``), never
from another test module: importing one runs its module body and couples the two files' edits."""
