"""Importers: convert a published dataset's layout, or any user's table or folder, into the
one privkd HDF5 format. Nothing downstream of an importer knows where the data came from."""
