"""Data for the out-of-the-box demo: the knowledge files of the demo shop, Kopi Nusantara."""
