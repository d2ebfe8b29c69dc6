"""The Kivy workbench (arrives with the Morphic workbench issue)."""
