"""The sequence file format: models, loader with file:line:column errors, validation."""
