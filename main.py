# main.py — hands over to the firmware's composition root.
from firmware import app

app.main()
