"""Change capture: tail MongoDB's change stream and turn changes into domain events."""
