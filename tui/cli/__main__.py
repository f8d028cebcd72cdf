from chunkq.tui.cli import main

main()
