"""Data sources: Datum codec, LMDB/LevelDB databases, the transformer, dataset builders."""
