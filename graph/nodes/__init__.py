"""One module per graph node; each node is a plain function `state -> partial update`."""
