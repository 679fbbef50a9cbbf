"""Everything that talks to a CVAT server through cvat-sdk."""
