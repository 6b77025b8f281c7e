"""One module per group of commands; each registers with caffe_lite.cli.command."""
