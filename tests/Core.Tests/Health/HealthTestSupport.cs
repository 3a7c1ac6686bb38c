using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Health;

/// <summary>A logger that keeps every entry, for asserting on warnings.</summary>
internal sealed class CapturingLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public IEnumerable<string> AtLeast(LogLevel level) => Entries.Where(e => e.Level >= level).Select(e => e.Message);

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue((logLevel, formatter(state, exception)));
}

/// <summary>Loopback-only networking helpers with bounded waits.</summary>
internal static class Loopback
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    public static EquatableArray<IPAddress> V4 { get; } = new([IPAddress.Loopback]);

    /// <summary>A port that was free on 127.0.0.1 (and ::1) a moment ago.</summary>
    public static int FreePort()
    {
        for (var attempt = 0; ; attempt++)
        {
            using var v4 = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            v4.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var port = ((IPEndPoint)v4.LocalEndPoint!).Port;
            if (!Socket.OSSupportsIPv6) return port;
            try
            {
                using var v6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
                v6.Bind(new IPEndPoint(IPAddress.IPv6Loopback, port));
                return port;
            }
            catch (SocketException) when (attempt < 20)
            {
            }
        }
    }

    public static HttpClient Client() => new(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero, UseProxy = false })
    {
        Timeout = Timeout,
    };

    public static Uri Url(int port, string path = "/", IPAddress? address = null) =>
        new($"http://{new IPEndPoint(address ?? IPAddress.Loopback, port)}{path}");

    /// <summary>Whether something accepts TCP connections on 127.0.0.1:port (false on connection refused).</summary>
    public static async Task<bool> AcceptsAsync(int port)
    {
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(Timeout);
        try
        {
            await client.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), timeout.Token);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            return false;
        }
    }
}

/// <summary>One kept-alive HTTP/1.1 connection, to show a listener was not restarted between requests.</summary>
internal sealed class RawHttpConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly byte[] _buffer = new byte[8192];
    private int _buffered;

    private RawHttpConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<RawHttpConnection> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(Loopback.Timeout);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), timeout.Token);
        return new RawHttpConnection(socket);
    }

    /// <summary>Sends GET path and reads one response; throws if the server closed the connection.</summary>
    public async Task<(int Status, string Body)> GetAsync(string path)
    {
        using var timeout = new CancellationTokenSource(Loopback.Timeout);
        await _stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"), timeout.Token);

        int headerEnd;
        while ((headerEnd = IndexOf("\r\n\r\n"u8)) < 0) await FillAsync(timeout.Token);
        var head = Encoding.ASCII.GetString(_buffer, 0, headerEnd);
        var lines = head.Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var length = lines.Skip(1)
            .Select(l => l.Split(':', 2))
            .Where(p => p[0].Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            .Select(p => int.Parse(p[1].Trim(), System.Globalization.CultureInfo.InvariantCulture))
            .Single();
        var total = headerEnd + 4 + length;
        while (_buffered < total) await FillAsync(timeout.Token);
        var body = Encoding.UTF8.GetString(_buffer, headerEnd + 4, length);
        Buffer.BlockCopy(_buffer, total, _buffer, 0, _buffered - total);
        _buffered -= total;
        return (status, body);
    }

    private int IndexOf(ReadOnlySpan<byte> needle) => _buffer.AsSpan(0, _buffered).IndexOf(needle);

    private async Task FillAsync(CancellationToken ct)
    {
        var read = await _stream.ReadAsync(_buffer.AsMemory(_buffered), ct);
        if (read == 0) throw new IOException("server closed the connection");
        _buffered += read;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _socket.Dispose();
    }
}
