"""Tests of warelay.agents."""
