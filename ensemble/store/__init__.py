"""Plumbing every stage stands on: atomic writes, pid locks, the workspace's folders."""
