"""Tests of warelay.knowledge."""
