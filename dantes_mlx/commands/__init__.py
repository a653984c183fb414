"""Thin click commands: each parses options and calls one stage function."""
