"""samscope napari plugin: interactive and automatic Segment Anything."""
