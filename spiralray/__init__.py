"""spiralray."""
