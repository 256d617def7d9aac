"""warelay.inbox."""
