using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// In-process UDP server living in a pod's namespace: answers every datagram with <c>pod=NAME src=ADDR</c>.
/// One dual-stack socket per port, so it serves IPv4 and IPv6.
/// </summary>
internal sealed class UdpResponder : IDisposable
{
    private static readonly TimeSpan StopWait = TimeSpan.FromSeconds(2);

    private readonly Socket _socket;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly string _podName;

    private UdpResponder(Socket socket, string podName)
    {
        _socket = socket;
        _podName = podName;
        _loop = Task.Run(LoopAsync);
    }

    public static UdpResponder Start(NetworkNamespace ns, string podName, int port)
    {
        var socket = ns.Run(() =>
        {
            var s = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { DualMode = true };
            try
            {
                s.Bind(new IPEndPoint(IPAddress.IPv6Any, port));
                return s;
            }
            catch
            {
                s.Dispose();
                throw;
            }
        });
        return new UdpResponder(socket, podName);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _socket.Dispose();
        try
        {
            _loop.Wait(StopWait);
        }
        catch (AggregateException)
        {
            // The loop only ends by cancellation or socket disposal.
        }

        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        var buffer = new byte[65_536];
        EndPoint any = new IPEndPoint(IPAddress.IPv6Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var received = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token).ConfigureAwait(false);
                var remote = (IPEndPoint)received.RemoteEndPoint;
                var source = remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
                var reply = Encoding.UTF8.GetBytes($"pod={_podName} src={source}");
                await _socket.SendToAsync(reply, SocketFlags.None, remote, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                // A transient error (e.g. a reply that could not be routed); keep serving, without spinning.
                try
                {
                    await Task.Delay(10, _stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }
}
