"""FG-Shapes, the embedded default data set."""
