"""Core's own components, registered through the same ``segcore_register`` hook as any plugin."""
