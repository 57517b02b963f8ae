"""The shared ground every package stands on: the error model and the event contract."""
