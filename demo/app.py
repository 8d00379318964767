"""The Gradio demo: `python demo/app.py [--host 127.0.0.1] [--port 7860] [--checkpoint FILE] [--examples DIR]`.

The same as `lipsync demo` (see `lipsync demo --help` for every option); the page lives in `lipsync.demo`.
"""
import sys

from lipsync.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
