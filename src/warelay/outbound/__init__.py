"""warelay.outbound."""
