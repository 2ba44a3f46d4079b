"""Report writers: overlay pictures and summary tables."""
