from chunkq.tui.http import serve_command

serve_command(prog_name="chunkq serve")
