# main.py — hands over to the firmware's composition root, and restarts the board if it ever stops.
from firmware import app

app.run_on_board()
