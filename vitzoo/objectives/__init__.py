"""Training objectives, one module per method: loss, heads and masks, wrapping an encoder."""
