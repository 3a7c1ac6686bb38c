using System.Buffers;
using System.Globalization;
using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>
/// iptables-restore input held as UTF-8 in 32 KiB chunks: a full sync's script at 10,000 services
/// (~10 MB of text) costs its bytes once, never a UTF-16 string of twice that nor a large-object-heap
/// array, and goes to the tool's stdin chunk by chunk (<see cref="WriteToAsync"/>).
/// <see cref="ToString"/> makes the string for tests, logs and golden files.
/// </summary>
public sealed class RestoreScript
{
    // Below the large-object-heap threshold (85,000 bytes): chunks are ordinary gen0 garbage once dropped.
    private const int ChunkSize = 32 * 1024;

    private sealed class Chunk
    {
        public readonly byte[] Bytes = new byte[ChunkSize];
        public int Used;

        public Span<byte> Free => Bytes.AsSpan(Used);

        public ReadOnlySpan<byte> Written => Bytes.AsSpan(0, Used);
    }

    private readonly List<Chunk> _chunks = [];

    /// <summary>An empty script (nothing to restore).</summary>
    public static RestoreScript Empty => new();

    /// <summary>Bytes written.</summary>
    public long Length { get; private set; }

    public bool IsEmpty => Length == 0;

    public void Clear()
    {
        _chunks.Clear();
        Length = 0;
    }

    public RestoreScript Append(string text) => Append(text.AsSpan());

    public RestoreScript Append(ReadOnlySpan<char> text)
    {
        Span<byte> bytes = stackalloc byte[4];
        while (!text.IsEmpty)
        {
            var status = Ascii.FromUtf16(text, Free(), out var written);
            Wrote(written);
            text = text[written..];
            if (status == OperationStatus.DestinationTooSmall) NewChunk();
            else if (status == OperationStatus.InvalidData)
            {
                // Not ASCII: one character (or surrogate pair) as UTF-8; a chunk boundary may split its
                // bytes, which the decoders of WriteToAsync and ToString join again.
                Rune.DecodeFromUtf16(text, out var rune, out var consumed);
                AppendBytes(bytes[..rune.EncodeToUtf8(bytes)]);
                text = text[consumed..];
            }
        }
        return this;
    }

    public RestoreScript Append(char c) => Append([c]);

    public RestoreScript Append(int value)
    {
        Span<byte> digits = stackalloc byte[11];
        value.TryFormat(digits, out var n, default, CultureInfo.InvariantCulture);
        return AppendBytes(digits[..n]);
    }

    /// <summary>Moves the text of <paramref name="other"/> to the end of this script (no copy), leaving <paramref name="other"/> empty.</summary>
    public RestoreScript MoveFrom(RestoreScript other)
    {
        _chunks.AddRange(other._chunks);
        Length += other.Length;
        other.Clear();
        return this;
    }

    /// <summary>
    /// Copies the bytes written from offset <paramref name="from"/> to the end into <paramref name="buffer"/> (replaced by
    /// a larger one when too small); returns how many. Reads the last chunks only: for a part just written.
    /// </summary>
    public int CopyFrom(long from, ref byte[] buffer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(from);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(from, Length);
        var count = checked((int)(Length - from));
        if (buffer.Length < count) buffer = new byte[Math.Max(count, 2 * buffer.Length)];
        var end = Length;
        for (var i = _chunks.Count - 1; i >= 0 && end > from; i--)
        {
            var chunk = _chunks[i];
            var start = end - chunk.Used;
            var first = Math.Max(start, from);
            chunk.Bytes.AsSpan((int)(first - start), (int)(end - first)).CopyTo(buffer.AsSpan((int)(first - from)));
            end = start;
        }
        return count;
    }

    /// <summary>Drops every byte written from offset <paramref name="length"/> on, as if they had never been appended.</summary>
    public void Truncate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Length);
        while (_chunks.Count > 0 && Length - _chunks[^1].Used >= length)
        {
            Length -= _chunks[^1].Used;
            _chunks.RemoveAt(_chunks.Count - 1);
        }
        if (Length > length)
        {
            _chunks[^1].Used -= (int)(Length - length);
            Length = length;
        }
    }

    /// <summary>Writes the script to a tool's stdin, one chunk at a time.</summary>
    public async Task WriteToAsync(TextWriter writer, CancellationToken cancellationToken)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[ChunkSize];
        for (var i = 0; i < _chunks.Count; i++)
        {
            var n = decoder.GetChars(_chunks[i].Written, chars, flush: i == _chunks.Count - 1);
            await writer.WriteAsync(chars.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Hands each line of the script (without its '\n') to <paramref name="onLine"/>, decoding one chunk at a time.</summary>
    public void ForEachLine(NodeTools.LineHandler onLine)
    {
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[ChunkSize];
        var carried = new StringBuilder(); // a line cut by a chunk boundary
        for (var i = 0; i < _chunks.Count; i++)
        {
            var rest = chars.AsSpan(0, decoder.GetChars(_chunks[i].Written, chars, flush: i == _chunks.Count - 1));
            for (var end = rest.IndexOf('\n'); end >= 0; end = rest.IndexOf('\n'))
            {
                if (carried.Length == 0) onLine(rest[..end]);
                else
                {
                    onLine(carried.Append(rest[..end]).ToString());
                    carried.Clear();
                }
                rest = rest[(end + 1)..];
            }
            carried.Append(rest);
        }
        if (carried.Length > 0) onLine(carried.ToString());
    }

    public override string ToString()
    {
        var text = new StringBuilder((int)Math.Min(Length, int.MaxValue));
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[ChunkSize];
        for (var i = 0; i < _chunks.Count; i++)
        {
            var n = decoder.GetChars(_chunks[i].Written, chars, flush: i == _chunks.Count - 1);
            text.Append(chars, 0, n);
        }
        return text.ToString();
    }

    private RestoreScript AppendBytes(ReadOnlySpan<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var free = Free();
            if (free.IsEmpty)
            {
                NewChunk();
                continue;
            }
            var take = Math.Min(free.Length, bytes.Length);
            bytes[..take].CopyTo(free);
            Wrote(take);
            bytes = bytes[take..];
        }
        return this;
    }

    private Span<byte> Free() => _chunks.Count == 0 ? [] : _chunks[^1].Free;

    private void Wrote(int bytes)
    {
        if (bytes == 0) return;
        _chunks[^1].Used += bytes;
        Length += bytes;
    }

    private void NewChunk() => _chunks.Add(new Chunk());
}
