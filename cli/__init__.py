"""The command-line programs: `adapter-service` (starts the whole service) and `adapterctl` (an HTTP
client of it). They stand above `api` and `workers` and are neither."""
