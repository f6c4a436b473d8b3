"""What runs stand on: exporting a query into a file, storing and reading outputs, the
metrics read from the database."""
