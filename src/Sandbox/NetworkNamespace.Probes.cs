using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ProxyPlanes.Sandbox;

public sealed partial class NetworkNamespace
{
    /// <summary>Responses larger than this are reported as <see cref="ProbeOutcome.Error"/>.</summary>
    public const int MaxHttpResponseBytes = 4 * 1024 * 1024;

    /// <summary>Creates a socket that lives in this namespace (the <c>socket(2)</c> call runs inside <see cref="Run{T}"/>).</summary>
    public Socket CreateSocket(AddressFamily addressFamily, SocketType socketType, ProtocolType protocolType) =>
        Run(() => new Socket(addressFamily, socketType, protocolType));

    /// <summary>
    /// Sends <c>GET path HTTP/1.0</c> from inside this namespace to <paramref name="ip"/> (IPv4 or IPv6) and reads the whole
    /// response. Never throws for network failures: they are reported through <see cref="HttpProbeResult.Outcome"/>.
    /// The whole probe (connect, send, read) is bounded by <paramref name="timeout"/>.
    /// </summary>
    public async Task<HttpProbeResult> HttpGetAsync(
        string ip,
        int port,
        string path,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        var address = ParseAddress(ip);
        ValidatePort(port);
        ArgumentNullException.ThrowIfNull(path);
        if (!path.StartsWith('/') || path.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
        {
            throw new ArgumentException($"Invalid request path '{path}': must start with '/' and contain no whitespace.", nameof(path));
        }

        var stopwatch = Stopwatch.StartNew();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        using var socket = CreateSocket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        socket.NoDelay = true;

        var stage = "connect";
        try
        {
            await socket.ConnectAsync(new IPEndPoint(address, port), cts.Token).ConfigureAwait(false);

            stage = "send";
            var host = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";
            var request = Encoding.ASCII.GetBytes($"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            await socket.SendAsync(request, SocketFlags.None, cts.Token).ConfigureAwait(false);

            stage = "receive";
            using var response = new MemoryStream();
            var buffer = new byte[16 * 1024];
            while (true)
            {
                var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }

                if (response.Length + read > MaxHttpResponseBytes)
                {
                    return new HttpProbeResult(ProbeOutcome.Error, string.Empty, stopwatch.Elapsed, Error: $"response larger than {MaxHttpResponseBytes} bytes");
                }

                response.Write(buffer, 0, read);
            }

            return ParseHttpResponse(response.ToArray(), stopwatch.Elapsed);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new HttpProbeResult(ProbeOutcome.TimedOut, string.Empty, stopwatch.Elapsed, Error: $"no complete answer within {timeout.TotalMilliseconds:0} ms ({stage})");
        }
        catch (SocketException e)
        {
            (var outcome, var error) = Classify(e, stage);
            return new HttpProbeResult(outcome, string.Empty, stopwatch.Elapsed, Error: error);
        }
    }

    /// <summary>
    /// Sends one UDP datagram from inside this namespace and waits for one reply. ICMP port unreachable is reported as
    /// <see cref="ProbeOutcome.Refused"/>, no reply within <paramref name="timeout"/> as <see cref="ProbeOutcome.TimedOut"/>.
    /// </summary>
    public async Task<UdpProbeResult> UdpRequestAsync(
        string ip,
        int port,
        ReadOnlyMemory<byte> payload,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        var address = ParseAddress(ip);
        ValidatePort(port);

        var stopwatch = Stopwatch.StartNew();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        using var socket = CreateSocket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);

        var stage = "connect";
        try
        {
            // A connected UDP socket gets hard ICMP errors (port unreachable -> ECONNREFUSED) reported on receive;
            // IP_RECVERR makes the soft ones (host/net unreachable) reported too.
            EnableReceiveErrors(socket, address.AddressFamily);
            socket.Connect(new IPEndPoint(address, port));
            stage = "send";
            await socket.SendAsync(payload, SocketFlags.None, cts.Token).ConfigureAwait(false);
            stage = "receive";
            var buffer = new byte[65_536];
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token).ConfigureAwait(false);
            return new UdpProbeResult(ProbeOutcome.Answered, buffer[..read], stopwatch.Elapsed);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new UdpProbeResult(ProbeOutcome.TimedOut, [], stopwatch.Elapsed, $"no reply within {timeout.TotalMilliseconds:0} ms");
        }
        catch (SocketException e)
        {
            (var outcome, var error) = Classify(e, stage);
            return new UdpProbeResult(outcome, [], stopwatch.Elapsed, error);
        }
    }

    /// <inheritdoc cref="UdpRequestAsync(string, int, ReadOnlyMemory{byte}, TimeSpan, CancellationToken)"/>
    public Task<UdpProbeResult> UdpRequestAsync(string ip, int port, string payload, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        UdpRequestAsync(ip, port, Encoding.UTF8.GetBytes(payload), timeout, cancellationToken);

    private static void EnableReceiveErrors(Socket socket, AddressFamily family)
    {
        const int SOL_IP = 0, IP_RECVERR = 11, SOL_IPV6 = 41, IPV6_RECVERR = 25;
        Span<byte> on = stackalloc byte[sizeof(int)];
        BitConverter.TryWriteBytes(on, 1);
        if (family == AddressFamily.InterNetworkV6)
        {
            socket.SetRawSocketOption(SOL_IPV6, IPV6_RECVERR, on);
        }
        else
        {
            socket.SetRawSocketOption(SOL_IP, IP_RECVERR, on);
        }
    }

    internal static (ProbeOutcome Outcome, string Error) Classify(SocketException e, string stage)
    {
        var outcome = e.SocketErrorCode switch
        {
            SocketError.ConnectionRefused => ProbeOutcome.Refused,
            SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.HostDown or SocketError.NetworkDown => ProbeOutcome.Unreachable,
            SocketError.TimedOut => ProbeOutcome.TimedOut,
            _ => ProbeOutcome.Error,
        };
        return (outcome, $"{stage}: {e.SocketErrorCode} ({e.Message})");
    }

    internal static HttpProbeResult ParseHttpResponse(byte[] response, TimeSpan elapsed)
    {
        if (response.Length == 0)
        {
            return new HttpProbeResult(ProbeOutcome.Error, string.Empty, elapsed, Error: "connection closed without a response");
        }

        ReadOnlySpan<byte> span = response;
        var headerEnd = span.IndexOf("\r\n\r\n"u8);
        var separatorLength = 4;
        if (headerEnd < 0)
        {
            headerEnd = span.IndexOf("\n\n"u8);
            separatorLength = 2;
        }

        if (headerEnd < 0)
        {
            return new HttpProbeResult(ProbeOutcome.Error, string.Empty, elapsed, Error: $"malformed HTTP response ({response.Length} bytes, no end of headers)");
        }

        var head = Encoding.ASCII.GetString(span[..headerEnd]);
        var statusLine = head.Split('\n', 2)[0].TrimEnd('\r');
        var parts = statusLine.Split(' ', 3);
        if (parts.Length < 2 || !parts[0].StartsWith("HTTP/", StringComparison.Ordinal) || !int.TryParse(parts[1], out var status))
        {
            return new HttpProbeResult(ProbeOutcome.Error, string.Empty, elapsed, Error: $"malformed HTTP status line '{statusLine}'");
        }

        var body = Encoding.UTF8.GetString(span[(headerEnd + separatorLength)..]);
        return new HttpProbeResult(ProbeOutcome.Answered, body, elapsed, status);
    }

    private static IPAddress ParseAddress(string ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        var trimmed = ip.StartsWith('[') && ip.EndsWith(']') ? ip[1..^1] : ip;
        return IPAddress.TryParse(trimmed, out var address)
            ? address
            : throw new ArgumentException($"'{ip}' is not an IP address.", nameof(ip));
    }

    private static void ValidatePort(int port)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
    }
}
