"""samscope FiftyOne plugin."""
