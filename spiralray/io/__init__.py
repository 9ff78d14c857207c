"""The only place that touches storage: readers by window, writers, the manifest. No torch."""
