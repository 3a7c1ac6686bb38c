using System.Diagnostics;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;
using Errno = ProxyPlanes.Netlink.LinuxUapi.Errno;

namespace ProxyPlanes.Netlink;

/// <summary>Writes a request's family header and attributes (after the nlmsghdr, which the socket writes).</summary>
public delegate void NetlinkRequestWriter(ref NetlinkWriter writer);

/// <summary>Reads one reply message into a value.</summary>
public delegate T NetlinkMessageParser<out T>(NetlinkMessage message);

/// <summary>
/// One nfnetlink batch: its requests, bytes and chunks, the time spent making and writing its
/// messages (ours), and from the send to the last answer (the kernel's: it applies and commits the
/// batch inside sendmsg).
/// </summary>
public readonly record struct NetfilterBatchStats(int Requests, int Bytes, int Chunks, TimeSpan WriteTime, TimeSpan KernelTime);

/// <summary>One request of a batch: what to send and how to name it in an error.</summary>
public sealed record NetlinkRequest(ushort Type, ushort Flags, NetlinkRequestWriter Write)
{
    private readonly Func<string>? _describe;
    private string? _operation;

    public NetlinkRequest(ushort type, ushort flags, NetlinkRequestWriter write, string operation)
        : this(type, flags, write) => _operation = operation;

    /// <summary>
    /// A request whose name is made only when needed (a refusal, a log): a cold sync's batch holds
    /// tens of thousands of requests, and their names would be tens of MiB of text nobody reads.
    /// </summary>
    public NetlinkRequest(ushort type, ushort flags, NetlinkRequestWriter write, Func<string> describe)
        : this(type, flags, write) => _describe = describe;

    /// <summary>How an error names this request (<c>nftables add rule ip t c …</c>).</summary>
    public string Operation => _operation ??= _describe?.Invoke() ?? "";

    /// <summary>Added to the error message when the kernel refuses this request with <see cref="HintErrno"/>.</summary>
    public string? Hint { get; init; }
    public int HintErrno { get; init; }
}

/// <summary>
/// A netlink socket bound to the kernel, in the network namespace of the thread that opened it (it
/// stays there whichever thread uses it later). Requests are numbered; every write is acknowledged
/// and a refusal becomes a <see cref="NetlinkException"/> naming the operation, with the kernel's
/// extended ACK message when it sent one. Dumps are read to NLMSG_DONE and retried when the kernel
/// interrupts them (NLM_F_DUMP_INTR), the socket overflows (ENOBUFS) or a datagram does not fit the
/// receive buffer (which then grows). One caller at a time: calls are serialized.
/// </summary>
public sealed class NetlinkSocket : IDisposable
{
    /// <summary>How many times a dump is restarted before giving up.</summary>
    public const int DumpAttempts = 5;

    /// <summary>The most requests sent in one datagram: their ACKs must fit the socket's receive queue.</summary>
    public const int MaxBatch = 128;

    private const int RequestBufferSize = 64 * 1024;
    private const int SocketBufferSize = 4 * 1024 * 1024;

    private readonly SafeNetlinkHandle _handle;
    private readonly Lock _gate = new();
    private byte[] _receiveBuffer = new byte[64 * 1024];
    private readonly byte[] _requestBuffer = new byte[RequestBufferSize];
    // Pinned: a batch is sent with sendmsg from this buffer and, for a larger one, further chunks.
    private readonly byte[] _batchBuffer = GC.AllocateUninitializedArray<byte>(RequestBufferSize, pinned: true);
    private uint _sequence;
    private TimeSpan _receiveTimeout = TimeSpan.FromSeconds(30);

    private NetlinkSocket(SafeNetlinkHandle handle, int protocol, uint portId)
    {
        _handle = handle;
        Protocol = protocol;
        PortId = portId;
        _sequence = (uint)Environment.TickCount;
    }

    /// <summary>The largest nfnetlink batch sent: one datagram, which must fit the socket's send buffer (raised to it with SO_SNDBUFFORCE).</summary>
    public const int MaxNetfilterBatchBytes = 256 * 1024 * 1024;

    /// <summary>
    /// A batch larger than the socket's own 64 KiB buffer is written into chunks of this size, sent
    /// as one datagram with sendmsg (one iovec per chunk) and dropped after the send: nothing the
    /// size of a cold sync's batch stays allocated (a contiguous buffer grown for it, as before, kept
    /// 64 MiB at 10,000 services).
    /// </summary>
    public const int NetfilterBatchChunkBytes = 1024 * 1024;

    /// <summary>The most messages in an nfnetlink batch whose every message is acknowledged (the ACKs wait in the receive queue); a larger batch asks for the last ACK only.</summary>
    public const int MaxNetfilterBatchMessages = 2048;

    private int _sendBufferSize = SocketBufferSize;

    /// <summary>NETLINK_ROUTE, NETLINK_GENERIC or NETLINK_NETFILTER.</summary>
    public int Protocol { get; }

    /// <summary>The port id the kernel assigned (nl_pid).</summary>
    public uint PortId { get; }

    /// <summary>The receive buffer size; grows when a datagram does not fit.</summary>
    public int ReceiveBufferSize => _receiveBuffer.Length;

    /// <summary>
    /// Opens and binds a socket of <paramref name="protocol"/> in the calling thread's network
    /// namespace, with extended ACKs and capped ACKs on, a large socket receive buffer (SO_RCVBUFFORCE,
    /// else SO_RCVBUF) and a receive timeout.
    /// </summary>
    public static NetlinkSocket Open(int protocol, TimeSpan? receiveTimeout = null) => Open(protocol, receiveTimeout, 64 * 1024);

    /// <summary>Test hook: a small <paramref name="receiveBufferSize"/> exercises the growth path.</summary>
    internal static NetlinkSocket Open(int protocol, TimeSpan? receiveTimeout, int receiveBufferSize)
    {
        var handle = Interop.OpenNetlinkSocket(protocol);
        try
        {
            // Bigger queues than the default 208 KiB: a batch's ACKs and a dump's datagrams wait there.
            if (Interop.TrySetSocketOption(handle, LinuxUapi.Socket.SOL_SOCKET, LinuxUapi.Socket.SO_RCVBUFFORCE, SocketBufferSize) != 0)
                Interop.SetSocketOption(handle, LinuxUapi.Socket.SOL_SOCKET, LinuxUapi.Socket.SO_RCVBUF, SocketBufferSize, "SO_RCVBUF");
            _ = Interop.TrySetSocketOption(handle, LinuxUapi.Socket.SOL_SOCKET, LinuxUapi.Socket.SO_SNDBUFFORCE, SocketBufferSize);
            // Error messages from the kernel, and ACKs that do not echo the whole request back.
            _ = Interop.TrySetSocketOption(handle, SOL_NETLINK, NETLINK_EXT_ACK, 1);
            _ = Interop.TrySetSocketOption(handle, SOL_NETLINK, NETLINK_CAP_ACK, 1);
            if (protocol == NETLINK_ROUTE) _ = Interop.TrySetSocketOption(handle, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
            var timeout = receiveTimeout ?? TimeSpan.FromSeconds(30);
            Interop.SetReceiveTimeout(handle, timeout);
            var portId = Interop.Bind(handle);
            return new NetlinkSocket(handle, protocol, portId) { _receiveBuffer = new byte[receiveBufferSize], _receiveTimeout = timeout };
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Sends one request with NLM_F_ACK and waits for its ACK.</summary>
    public void Execute(NetlinkRequest request) => ExecuteBatch([request]);

    /// <summary>
    /// Sends requests (each with NLM_F_ACK), up to <see cref="MaxBatch"/> per datagram, and reads every
    /// ACK. The kernel handles every request of a datagram even after one fails, so all are answered;
    /// the first failure, in request order, is thrown once all ACKs are read. Returns the number sent.
    /// </summary>
    public int ExecuteBatch(IReadOnlyList<NetlinkRequest> requests)
    {
        lock (_gate)
        {
            NetlinkException? first = null;
            var firstIndex = int.MaxValue;
            for (var offset = 0; offset < requests.Count;)
            {
                var writer = new NetlinkWriter(_requestBuffer);
                var firstSequence = _sequence + 1;
                var count = 0;
                while (offset + count < requests.Count && count < MaxBatch)
                {
                    var request = requests[offset + count];
                    var before = writer.Length;
                    try
                    {
                        var start = writer.BeginMessage(request.Type, (ushort)(request.Flags | NLM_F_REQUEST | NLM_F_ACK), ++_sequence, 0);
                        request.Write(ref writer);
                        writer.EndMessage(start);
                    }
                    catch (InvalidOperationException) when (count > 0)
                    {
                        // The datagram is full: send what fits, this request goes in the next one.
                        _sequence--;
                        writer = Truncate(writer, before);
                        break;
                    }
                    count++;
                }
                Interop.SendToKernel(_handle, writer.Written, count == 1 ? requests[offset].Operation : $"{requests[offset].Operation} (and {count - 1} more)");

                var pending = count;
                while (pending > 0)
                {
                    var length = ReceiveDatagram(out var errno);
                    if (errno != 0)
                        throw new NetlinkException(errno, $"{requests[offset].Operation}: reading the kernel's acknowledgements");
                    foreach (var message in new NetlinkMessageReader(_receiveBuffer.AsSpan(0, length)))
                    {
                        var index = (int)(message.Sequence - firstSequence);
                        if (index < 0 || index >= count || message.Type != NLMSG_ERROR) continue; // a stale reply
                        pending--;
                        var (error, kernelMessage) = ParseError(message);
                        if (error == 0 || offset + index >= firstIndex) continue;
                        var failed = requests[offset + index];
                        firstIndex = offset + index;
                        first = new NetlinkException(error, failed.Operation, kernelMessage, failed.HintErrno == error ? failed.Hint : null);
                    }
                }
                offset += count;
            }
            if (first is not null) throw first;
            return requests.Count;
        }
    }

    /// <summary>
    /// Sends <paramref name="requests"/> as one nfnetlink transaction (NETLINK_NETFILTER): between
    /// NFNL_MSG_BATCH_BEGIN and NFNL_MSG_BATCH_END of <paramref name="subsystem"/>, in one datagram,
    /// each with NLM_F_ACK. The kernel applies the whole batch or, when any message fails, none of it;
    /// it handles the batch inside sendto, so every answer is queued when that returns. The first
    /// refused request (in order) is thrown, named by its <see cref="NetlinkRequest.Operation"/>; a
    /// refusal of the batch itself (no CAP_NET_ADMIN, a commit that failed) is thrown named by
    /// <paramref name="description"/>. <paramref name="requests"/> is read in order, each request once
    /// (twice when its message starts a new chunk), all before the send, and afterwards only the
    /// refused one (for its name): a list may make its requests as they are read, so that a large
    /// batch is never held whole; an exception it throws while the batch is written sends nothing.
    /// </summary>
    public void ExecuteNetfilterBatch(ushort subsystem, IReadOnlyList<NetlinkRequest> requests, string description)
    {
        if (requests.Count == 0) return;
        // A larger batch asks for an ACK of its last request only: the kernel still answers every refused
        // request, and answers after it has handled the whole batch, so the last ACK says it is done.
        var acknowledgeEach = requests.Count <= MaxNetfilterBatchMessages;
        lock (_gate)
        {
            var started = Stopwatch.GetTimestamp();
            var beginSequence = _sequence + 1;
            var chunks = WriteNetfilterBatch(subsystem, requests, beginSequence, description, acknowledgeEach, out var length);
            var written = Stopwatch.GetTimestamp();
            _sequence += (uint)requests.Count + 2;
            var endSequence = _sequence;
            if (length > _sendBufferSize)
            {
                // One datagram must fit the send buffer (as nft does, force it up to the batch's size).
                if (Interop.TrySetSocketOption(_handle, LinuxUapi.Socket.SOL_SOCKET, LinuxUapi.Socket.SO_SNDBUFFORCE, length + 4096) == 0) _sendBufferSize = length;
            }
            Interop.SendToKernel(_handle, chunks, description);

            var answered = new bool[requests.Count];
            var pending = acknowledgeEach ? requests.Count : 1;
            NetlinkException? first = null;
            var firstIndex = int.MaxValue;
            while (pending > 0)
            {
                var received = ReceiveDatagram(out var errno);
                if (errno == Errno.ENOBUFS && !acknowledgeEach)
                    throw first ?? new NetlinkException(errno, $"{description}: the kernel refused more requests than the receive queue holds answers for (nothing applied)");
                if (errno != 0)
                    throw new NetlinkException(errno, $"{description}: reading the kernel's acknowledgements (whether the batch was applied is unknown)");
                foreach (var message in new NetlinkMessageReader(_receiveBuffer.AsSpan(0, received)))
                {
                    if (message.Type != NLMSG_ERROR) continue;
                    var (error, kernelMessage) = ParseError(message);
                    if (message.Sequence == beginSequence || message.Sequence == endSequence)
                    {
                        // The batch as a whole: refused before any message ran, or its commit failed
                        // (the kernel then drops the other answers). Either way nothing was applied.
                        if (error != 0) throw first ?? new NetlinkException(error, description, kernelMessage);
                        continue;
                    }
                    var index = unchecked((int)(message.Sequence - beginSequence)) - 1;
                    if (index < 0 || index >= requests.Count || answered[index]) continue; // a stale reply
                    answered[index] = true;
                    if (acknowledgeEach || index == requests.Count - 1) pending--;
                    if (error == 0 || index >= firstIndex) continue;
                    var failed = requests[index];
                    firstIndex = index;
                    first = new NetlinkException(error, failed.Operation, kernelMessage, failed.HintErrno == error ? failed.Hint : null);
                }
            }
            LastNetfilterBatch = new NetfilterBatchStats(requests.Count, length, chunks.Count, Stopwatch.GetElapsedTime(started, written), Stopwatch.GetElapsedTime(written));
            if (first is not null) throw first;
        }
    }

    /// <summary>The last nfnetlink batch this socket sent and the kernel answered (for logs and the benchmark).</summary>
    public NetfilterBatchStats? LastNetfilterBatch { get; private set; }

    /// <summary>
    /// Writes an nfnetlink batch: NFNL_MSG_BATCH_BEGIN (res_id <paramref name="subsystem"/>) with
    /// <paramref name="beginSequence"/>, each request (with NLM_F_ACK) numbered after it, then
    /// NFNL_MSG_BATCH_END. Begin and end ask for no ACK, as nft's do.
    /// </summary>
    internal static void WriteNetfilterBatch(ref NetlinkWriter writer, ushort subsystem, IReadOnlyList<NetlinkRequest> requests, uint beginSequence, bool acknowledgeEach = true)
    {
        for (var index = -1; index <= requests.Count; index++)
            WriteBatchMessage(ref writer, subsystem, requests, beginSequence, acknowledgeEach, index);
    }

    /// <summary>Message <paramref name="index"/> of a batch: -1 is BATCH_BEGIN, <c>requests.Count</c> BATCH_END, the others the requests.</summary>
    private static void WriteBatchMessage(ref NetlinkWriter writer, ushort subsystem, IReadOnlyList<NetlinkRequest> requests, uint beginSequence, bool acknowledgeEach, int index)
    {
        var sequence = (uint)(beginSequence + index + 1);
        if (index < 0 || index == requests.Count)
        {
            var start = writer.BeginMessage(index < 0 ? LinuxUapi.Nfnetlink.NFNL_MSG_BATCH_BEGIN : LinuxUapi.Nfnetlink.NFNL_MSG_BATCH_END, NLM_F_REQUEST, sequence, 0);
            writer.WriteNetfilterHeader(LinuxUapi.Netfilter.NFPROTO_UNSPEC, subsystem);
            writer.EndMessage(start);
            return;
        }
        var request = requests[index];
        var acknowledge = acknowledgeEach || index == requests.Count - 1 ? NLM_F_ACK : 0;
        var begin = writer.BeginMessage(request.Type, (ushort)(request.Flags | NLM_F_REQUEST | acknowledge), sequence, 0);
        request.Write(ref writer);
        writer.EndMessage(begin);
    }

    /// <summary>
    /// Writes the batch into the socket's buffer and, when it is larger, into pinned chunks of
    /// <see cref="NetfilterBatchChunkBytes"/> (a message never straddles two); returns the chunks
    /// with the bytes used in each, and the total in <paramref name="length"/>.
    /// </summary>
    private List<(byte[] Array, int Length)> WriteNetfilterBatch(ushort subsystem, IReadOnlyList<NetlinkRequest> requests, uint beginSequence, string description, bool acknowledgeEach, out int length)
    {
        var chunks = new List<(byte[] Array, int Length)>();
        var chunk = _batchBuffer;
        var writer = new NetlinkWriter(chunk);
        length = 0;
        for (var index = -1; index <= requests.Count; index++)
        {
            var before = writer.Length;
            try
            {
                WriteBatchMessage(ref writer, subsystem, requests, beginSequence, acknowledgeEach, index);
                continue;
            }
            catch (InvalidOperationException) when (before > 0)
            {
                // This chunk is full: the message starts again at the beginning of a new one.
            }
            chunks.Add((chunk, before));
            length += before;
            if (length + NetfilterBatchChunkBytes > MaxNetfilterBatchBytes)
                throw new NetlinkException(LinuxUapi.Errno.EMSGSIZE, description, $"the batch does not fit in {MaxNetfilterBatchBytes} bytes");
            chunk = GC.AllocateUninitializedArray<byte>(NetfilterBatchChunkBytes, pinned: true);
            writer = new NetlinkWriter(chunk);
            try
            {
                WriteBatchMessage(ref writer, subsystem, requests, beginSequence, acknowledgeEach, index);
            }
            catch (InvalidOperationException e)
            {
                var name = index < 0 || index == requests.Count ? description : requests[index].Operation;
                throw new NetlinkException(LinuxUapi.Errno.EMSGSIZE, name, $"one message larger than {NetfilterBatchChunkBytes} bytes ({e.Message})");
            }
        }
        chunks.Add((chunk, writer.Length));
        length += writer.Length;
        return chunks;
    }

    /// <summary>A request answered by one message (a GET without NLM_F_DUMP), parsed by <paramref name="parse"/>.</summary>
    public T Query<T>(NetlinkRequest request, NetlinkMessageParser<T> parse)
    {
        var results = Receive(request, parse, dump: false);
        return results.Count == 1 ? results[0] : throw new NetlinkProtocolException($"{request.Operation}: expected one reply, got {results.Count}");
    }

    /// <summary>A dump (NLM_F_DUMP): every message until NLMSG_DONE, each parsed by <paramref name="parse"/>; null results are skipped.</summary>
    public List<T> Dump<T>(NetlinkRequest request, NetlinkMessageParser<T?> parse) where T : class =>
        Receive(request, parse, dump: true).OfType<T>().ToList();

    private List<T> Receive<T>(NetlinkRequest request, NetlinkMessageParser<T> parse, bool dump)
    {
        lock (_gate)
        {
            for (var attempt = 1; ; attempt++)
            {
                var results = new List<T>();
                var sequence = ++_sequence;
                var writer = new NetlinkWriter(_requestBuffer);
                var start = writer.BeginMessage(request.Type, (ushort)(request.Flags | NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0)), sequence, 0);
                request.Write(ref writer);
                writer.EndMessage(start);
                Interop.SendToKernel(_handle, writer.Written, request.Operation);

                var retry = ReadReplies(request, sequence, dump, parse, results);
                if (retry is null) return results;
                if (attempt >= DumpAttempts)
                    throw new NetlinkException(retry.Value, request.Operation, $"gave up after {attempt} attempts");
                Drain();
            }
        }
    }

    /// <summary>Reads the replies to <paramref name="sequence"/>; returns null when complete, or the errno that calls for a retry.</summary>
    private int? ReadReplies<T>(NetlinkRequest request, uint sequence, bool dump, NetlinkMessageParser<T> parse, List<T> results)
    {
        var interrupted = false;
        while (true)
        {
            var length = ReceiveDatagram(out var errno);
            if (errno == Errno.ENOBUFS || errno == Errno.EMSGSIZE) return errno; // overflowed, or did not fit: start over
            if (errno != 0) throw new NetlinkException(errno, $"{request.Operation}: recv");
            foreach (var message in new NetlinkMessageReader(_receiveBuffer.AsSpan(0, length)))
            {
                if (message.Sequence != sequence) continue; // a stale reply to an abandoned request
                if ((message.Flags & NLM_F_DUMP_INTR) != 0) interrupted = true;
                switch (message.Type)
                {
                    case NLMSG_ERROR:
                    {
                        var (error, kernelMessage) = ParseError(message);
                        if (error == 0) return null; // an ACK
                        if (error == Errno.ENOBUFS) return error;
                        throw new NetlinkException(error == 0 ? Errno.EINVAL : error, request.Operation, kernelMessage,
                            request.HintErrno == error ? request.Hint : null);
                    }
                    case NLMSG_DONE:
                    {
                        var error = message.Payload.Length >= 4 ? -BitConverter.ToInt32(message.Payload) : 0;
                        if (error == Errno.ENOBUFS) return error;
                        if (error > 0) throw new NetlinkException(error, request.Operation, ParseDoneMessage(message));
                        // The kernel changed the table while dumping it: the dump may be inconsistent.
                        return interrupted ? Errno.EAGAIN : null;
                    }
                    case NLMSG_NOOP or NLMSG_OVERRUN:
                        continue;
                    default:
                        results.Add(parse(message));
                        if (!dump && (message.Flags & NLM_F_MULTI) == 0) return null;
                        break;
                }
            }
        }
    }

    /// <summary>Receives one datagram into the buffer; grows the buffer (errno EMSGSIZE) when it was truncated.</summary>
    private int ReceiveDatagram(out int errno)
    {
        var received = Interop.Receive(_handle, _receiveBuffer, 0);
        if (received < 0)
        {
            errno = -received;
            if (errno == Errno.EAGAIN) errno = Errno.ETIMEDOUT; // SO_RCVTIMEO expired: the kernel never answered
            return 0;
        }
        if (received > _receiveBuffer.Length)
        {
            // MSG_TRUNC reported the real size: the rest of this datagram is lost, the request must be repeated.
            _receiveBuffer = new byte[NetlinkWriter.NetlinkAlign(received) * 2];
            errno = Errno.EMSGSIZE;
            return 0;
        }
        errno = 0;
        return received;
    }

    /// <summary>Discards whatever is queued (replies to an abandoned dump), without waiting.</summary>
    private void Drain()
    {
        // Every message carries its sequence number, so leftovers would be skipped anyway; this only saves reading them.
        Interop.SetReceiveTimeout(_handle, TimeSpan.FromMilliseconds(1));
        try
        {
            while (Interop.Receive(_handle, _receiveBuffer, 0) > 0) { }
        }
        finally
        {
            Interop.SetReceiveTimeout(_handle, _receiveTimeout);
        }
    }

    /// <summary>
    /// Reads an NLMSG_ERROR message: the (negated) error code and, with NLM_F_ACK_TLVS, the extended
    /// ACK's text (NLMSGERR_ATTR_MSG). The original request follows the code unless NLM_F_CAPPED.
    /// </summary>
    internal static (int Errno, string? Message) ParseError(NetlinkMessage message)
    {
        var payload = message.Payload;
        if (payload.Length < 4) throw new NetlinkProtocolException("NLMSG_ERROR message without an error code");
        var error = -BitConverter.ToInt32(payload);
        string? text = null;
        if ((message.Flags & NLM_F_ACK_TLVS) != 0 && payload.Length >= 4 + NLMSG_HDRLEN)
        {
            var echoed = (message.Flags & NLM_F_CAPPED) != 0 ? NLMSG_HDRLEN : (int)BitConverter.ToUInt32(payload[4..]);
            var tlvStart = 4 + NetlinkWriter.NetlinkAlign(echoed);
            if (tlvStart <= payload.Length && new NetlinkAttributes(payload[tlvStart..]).TryFind(NLMSGERR_ATTR_MSG, out var msg))
                text = msg.String;
        }
        return (error, text);
    }

    private static string? ParseDoneMessage(NetlinkMessage message)
    {
        if ((message.Flags & NLM_F_ACK_TLVS) == 0 || message.Payload.Length <= 4) return null;
        return new NetlinkAttributes(message.Payload[4..]).TryFind(NLMSGERR_ATTR_MSG, out var msg) ? msg.String : null;
    }

    private NetlinkWriter Truncate(NetlinkWriter writer, int length)
    {
        var copy = new NetlinkWriter(_requestBuffer);
        copy.WriteBytes(writer.Written[..length]);
        return copy;
    }

    public void Dispose() => _handle.Dispose();
}
