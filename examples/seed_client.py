import DQUIC

# Initialize DQUIC
client_dquic = DQUIC.DQUIC()

# Define data to send
data_to_send = {
    1: b'some data stream 1',
    2: b'some data stream 2'
}

# Destination address (server address)
server_address = ('localhost', 9999)

# Send data
bytes_sent = client_dquic.send_to(server_address, data_to_send)
print(f"Bytes sent: {bytes_sent}")

# Receive data
max_bytes = 1024
sender_address, received_data = client_dquic.receive_from(max_bytes)
print(f"Received data from {sender_address}: {received_data}")

# Close the connection
client_dquic.close()
