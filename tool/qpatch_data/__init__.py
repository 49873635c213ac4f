"""Data installed with qpatch: the pins' patch sets (patches/) and the shipped policies (policies/)."""
