#!/bin/sh
echo "hello from ${1:-nobody}, built by $(id -un) on $(uname -s)"
