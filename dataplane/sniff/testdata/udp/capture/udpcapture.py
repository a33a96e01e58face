# cap.py PORT OUTPREFIX SECONDS: write each datagram sent to 127.0.0.1:PORT
# within SECONDS to OUTPREFIX.N.bin, and answer nothing.
import socket, sys, time
port, prefix, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
end = time.time() + secs
n = 0
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try:
        d, addr = s.recvfrom(65535)
    except socket.timeout:
        break
    open("%s.%d.bin" % (prefix, n), "wb").write(d)
    print(n, len(d), addr, flush=True)
    n += 1
