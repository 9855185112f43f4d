"""Drives python3-dbusmock's bluez5 template for the storegw BLE tests.

Usage: drive.py ADDRESS MFG_DATA_HEX SECONDS
Adds adapter hci0 and one device, prints "ready", then advertises Apple (0x004C) manufacturer
data with a varying RSSI every 200 ms for SECONDS, the way BlueZ reports adverts
(PropertiesChanged on org.bluez.Device1), then stops and stays idle.
"""
import sys
import time

import dbus

bus = dbus.SystemBus()
deadline = time.time() + 15
while True:
    try:
        mock = dbus.Interface(bus.get_object('org.bluez', '/'), 'org.bluez.Mock')
        mock.AddAdapter('hci0', 'storegw-test')
        break
    except dbus.exceptions.DBusException:
        if time.time() > deadline:
            raise
        time.sleep(0.1)

addr, payload, seconds = sys.argv[1], bytes.fromhex(sys.argv[2]), float(sys.argv[3])
path = mock.AddDevice('hci0', addr, 'beacon')
dev = dbus.Interface(bus.get_object('org.bluez', path), 'org.freedesktop.DBus.Mock')
print('ready', flush=True)
end = time.time() + seconds
i = 0
while time.time() < end:
    props = dbus.Dictionary({
        'RSSI': dbus.Int16(-55 - (i % 5), variant_level=1),
        'ManufacturerData': dbus.Dictionary(
            {dbus.UInt16(0x004C): dbus.Array(payload, signature='y', variant_level=1)},
            signature='qv', variant_level=1),
    }, signature='sv')
    dev.EmitSignal('org.freedesktop.DBus.Properties', 'PropertiesChanged', 'sa{sv}as',
                   ['org.bluez.Device1', props, dbus.Array([], signature='s')])
    i += 1
    time.sleep(0.2)
while True:
    time.sleep(60)
