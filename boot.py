# boot.py — runs first on every reset. Kept tiny: main.py hands over to the firmware.
import gc

gc.collect()
