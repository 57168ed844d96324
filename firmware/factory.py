# factory — factory reset: the button held HOLD_MS while running (firmware/links.py watches it), the
# setup page's confirmed action, or, on boards whose button is not GPIO0, the button held at power-up.
#
# A reset clears WiFi and every other setting (config.json back to defaults, but for the board
# profile: which hardware this is) and keeps the device's identity and its energy counters, which
# live in other files and are not touched.
#
# (GPIO0, the ESP32 BOOT button, held low at reset starts the ROM serial bootloader: there the
# power-up check can never see a press.) At power-up the composition root calls
# check_button(board.button, store, board.led) before it
# starts measuring: if the button is down it waits up to HOLD_MS, blinking the LED, and resets only
# if the button stays down the whole time; releasing it earlier cancels. It reads time only through
# the `clock` argument (the time module by default), so tests drive it with the simulated board.

import time

HOLD_MS = 10000
POLL_MS = 50
BLINK_MS = 250


def button_held(pin, hold_ms=HOLD_MS, clock=time, led=None):
    """True if pin reads 0 (pressed) now and keeps reading 0 for hold_ms; False as soon as it is released."""
    if pin.value() != 0:
        return False
    start = clock.ticks_ms()
    while True:
        held_ms = clock.ticks_diff(clock.ticks_ms(), start)
        if held_ms >= hold_ms:
            if led is not None:
                led.value(1)  # steady: the reset happens, the button can be released
            return True
        if led is not None:
            led.value((held_ms // BLINK_MS) & 1)
        clock.sleep_ms(POLL_MS)
        if pin.value() != 0:
            if led is not None:
                led.value(0)
            return False


def factory_reset(store, log=print, apply=None):
    """Clear WiFi and settings (config.json to defaults); keep identity and energy counters.

    The setup page calls this after the installer confirmed, with apply, the device's one live path
    for settings (firmware/app.py Device.apply): the running parts take the defaults at once. At
    power-up (apply None) nothing runs yet: the defaults are only saved. Returns the new Config.
    """
    log("factory reset: WiFi and settings cleared; identity and energy counters kept")
    if apply is None:
        return store.factory_reset()
    apply({}, True)
    return store.config


def check_button(pin, store, led=None, hold_ms=HOLD_MS, clock=time, log=print):
    """At power-up: factory reset if the button is held for hold_ms. True if it reset."""
    if pin.value() != 0:
        return False
    log("factory reset: keep the button pressed for %d s to clear WiFi and settings, release to cancel"
        % (hold_ms // 1000))
    if not button_held(pin, hold_ms, clock, led):
        log("factory reset: cancelled (button released early)")
        return False
    factory_reset(store, log)
    return True
