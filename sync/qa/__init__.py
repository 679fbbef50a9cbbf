"""Quality checks of a dataset by embeddings (issue 13): duplicates, split leaks, label mistakes.

Importing this package imports nothing (no NumPy, torch or FAISS); import the module you need.

Modules:
- `sync.qa.errors`: `QaError`, the one exception of the package.
- `sync.qa.embed`: `embed_dataset` (``autolabel embed``): CLIP image embeddings of a dataset's
  images and, optionally, of each annotation's crop, computed in batches, resumable, stored in
  the label store with their provenance (`sync.store.embeddings`); `require_embeddings`, the
  stored vectors or a `QaError` naming the command that makes them.
- `sync.qa.vectors`: vector search (FAISS) over vectors read from the store.
- `sync.qa.duplicates`: exact and near-duplicate images, splits without leaks.
- `sync.qa.mistakes`: annotations whose label disagrees with their embedding's neighbours.
"""
